"""Measurements of the pipeline that are not part of it: run from the repository root, e.g.
`python -m benchmarks.bench`."""
