"""`mtkit prepare`: a parallel corpus in, clean plain text and a manifest out.

`sources` turns the user's options into split streams (hub, local copy, text
files, TSV), `cleaning` normalises every split and filters train, and
`pipeline` writes the files atomically with the manifest.
"""
