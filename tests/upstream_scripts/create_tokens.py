from picas.documents import Task


def create_tokens(fields: dict, offset: int = 0) -> list:
    """One Task per value of each field, with ids token_<offset>, token_<offset+1> ..."""
    tokens = []
    for name, values in fields.items():
        for value in values:
            tokens.append(Task({'_id': f'token_{offset + len(tokens)}', 'type': 'token',
                                name: value}))
    return tokens
