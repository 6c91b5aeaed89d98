"""Benchmarks of the scheduler end to end (see docs/benchmarks.md). Run: python bench/run.py"""
