"""Azure test doubles for the e2e tier: a fake Microsoft Entra token endpoint and a fake Key Vault.

Both serve HTTPS on 127.0.0.1 with certificates from ``webhook.certs`` and are driven
by the real azure-identity and azure-keyvault-secrets SDKs in the tests.
"""
