"""kvinject with the Azure doubles (tests/harness/doubles): the doubles themselves, init mode, live verification."""
