"""The task kinds a volunteer can compute.

Each module implements one fixed task kind (DESIGN.md, principle 1: the client never runs code
it was sent); a work unit only carries the data and names the model.
"""
