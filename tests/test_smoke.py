from picas import state


def test_a_new_token_shows_in_todo(client):
    from picas.documents import Task
    task = Task({"input": {"x": 1}})
    assert client.save_documents([task]) == [True]
    rows = client.view("todo").rows
    assert [row.id for row in rows] == [task.id]
    assert state.classify(client.get(task.id).value) is state.TokenState.TODO
