#!/bin/bash
# usage: ./process_task.sh INPUT TOKEN_ID: runs INPUT through bash.
echo "token $2 on $(hostname)"
bash -c "$1" || { echo "failed"; exit 1; }
