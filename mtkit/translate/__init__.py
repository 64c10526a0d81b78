"""`mtkit translate`: checkpoints in, translations out.

From the top down: `command` is the entry point, choosing pipe, job, shard, workers or
torchrun; `workers` runs shards as processes or torchrun ranks; `shards` makes a
file's translation a resumable job, split into shards and merged; `stream` loads
checkpoints for inference and carries text files and pipes through the search in
bounded memory, in input order (`batching` groups lines for it and for `logprob`,
which scores given translations); `kernels` holds the CPU fast paths and `noise`
back-translation noise. Imports flow downward only. Below the whole package: the
search itself (mtkit.search, shared with training's validation), the lexical shortlist
file (mtkit.shortlist), Marian directories (mtkit.interop.marian) and torchrun's
plumbing (mtkit.distributed).
"""
