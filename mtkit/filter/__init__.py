"""`mtkit filter`: a prepared corpus in, its cleanest pairs out, by dual cross-entropy.

`dual` scores pairs with a forward and a backward model (Junczys-Dowmunt 2018) and
checks that the models fit the corpus; `job` runs the scoring as a resumable job over
the training split (one process, or shards in `--workers` processes, then merged);
`select` keeps a share or the pairs above a threshold and writes them as a prepared
corpus with a manifest; `command` runs the two in order. Scoring is
mtkit.translate.logprob's force-decoding; the job files are mtkit.translate.shards'.
"""
