"""Placeholder, replaced by the pilot work."""
class RunActor:  # noqa
    pass
