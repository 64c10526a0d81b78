"""`mtkit translate`: checkpoints in, translations out.

`search` turns padded source ids into target ids (greedy, beam, sampling, an
ensemble of models); `stream` loads checkpoints for inference and carries text
files and pipes through the search in bounded memory, in input order.
"""
