# The connection, from the encrypted config that `picas-cli init` wrote.
from picas.picas_config import PicasConfig
from picas.crypto import decrypt_password

config = PicasConfig(load=True)
PICAS_HOST_URL = config.config['host_url']
PICAS_DATABASE = config.config['database']
PICAS_USERNAME = config.config['username']
PICAS_PASSWORD = decrypt_password(config.config['encrypted_password']).decode()
