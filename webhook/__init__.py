"""kvinject: inject Azure Key Vault secrets into pods, and refuse pods that may not read them."""

__version__ = "0.1.0"
