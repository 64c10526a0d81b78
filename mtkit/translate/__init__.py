"""`mtkit translate`: checkpoints in, translations out.

`search` turns padded source ids into target ids (greedy, beam, sampling, an
ensemble of models); `stream` loads checkpoints for inference and carries text
files and pipes through the search in bounded memory, in input order; `shards`
makes a file's translation a resumable job, split into shards and merged;
`workers` runs shards as processes or torchrun ranks; `noise` is back-translation
noise.
"""
