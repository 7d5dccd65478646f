"""kvinject's Vault store against a real HashiCorp Vault (tests/harness/vault.py): the harness itself first."""
