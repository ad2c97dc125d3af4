"""What both sides of Allmende share: signing, the result codec, task kinds, models, errors.

This package must stay light: it imports neither torch, textual nor the coordinator.
"""
