"""Great Expectations suites (files) and the validation runner."""
