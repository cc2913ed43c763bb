"""Data-quality checks: Great Expectations suites and the history checks GX lacks."""
