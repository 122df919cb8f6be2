"""Benchmarks: each times edgert against real baselines measured in the same run.

Reports share one shape (JSON + Markdown + PNG); see docs/benchmarks.md once the
benchmark issues land. Nothing here is imported by the pipeline.
"""
