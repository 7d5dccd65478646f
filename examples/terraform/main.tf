# One app team's access to Key Vault, on both sides: the Azure side (a user-assigned managed identity,
# its federated credential for one Kubernetes ServiceAccount, Key Vault Secrets User on each secret)
# and kvinject's mirror of it (the annotated ServiceAccount and a SecretAccessPolicy).
#
# Everything that must agree between the two sides comes from the locals below, once:
# tests/unit/test_terraform_example.py checks that it does (and tests/e2e/test_terraform_example.py
# applies the Kubernetes half to a real apiserver with kvinject installed).
#
#   terraform init && terraform apply \
#     -var resource_group_name=payments-rg -var oidc_issuer_url="$(az aks show -g ... -n ... \
#        --query oidcIssuerProfile.issuerUrl -o tsv)" -var key_vault_resource_group_name=payments-rg

terraform {
  required_version = ">= 1.5"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.30"
    }
  }
}

# The subscription comes from ARM_SUBSCRIPTION_ID (azurerm 4.x requires one).
provider "azurerm" {
  features {}
}

# The cluster kvinject runs in (kubeconfig context); kubernetes_manifest needs the SecretAccessPolicy
# CRD installed before `terraform plan`, i.e. kvinject installed first.
provider "kubernetes" {
  config_path = "~/.kube/config"
}

variable "resource_group_name" {
  description = "Resource group of the managed identity."
  type        = string
}

variable "location" {
  description = "Azure region of the managed identity."
  type        = string
  default     = "westeurope"
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL (AKS: az aks show --query oidcIssuerProfile.issuerUrl)."
  type        = string
}

variable "key_vault_resource_group_name" {
  description = "Resource group of the existing Key Vault (RBAC authorization enabled)."
  type        = string
}

locals {
  namespace       = "payments"
  service_account = "api"
  vault_name      = "payments-kv"
  # The secrets the app may read: one role assignment each, and the same list in the policy.
  secrets = ["db-password", "shared-config"]
}

data "azurerm_key_vault" "app" {
  name                = local.vault_name
  resource_group_name = var.key_vault_resource_group_name
}

resource "azurerm_user_assigned_identity" "app" {
  name                = "payments-api"
  resource_group_name = var.resource_group_name
  location            = var.location
}

# Lets tokens of exactly this ServiceAccount, issued by this cluster, be exchanged for the identity.
resource "azurerm_federated_identity_credential" "app" {
  name = "payments-api"
  # Deprecated in late 4.x releases (the parent_id carries it), still required by early ones.
  resource_group_name = var.resource_group_name
  parent_id           = azurerm_user_assigned_identity.app.id
  issuer              = var.oidc_issuer_url
  subject             = "system:serviceaccount:${local.namespace}:${local.service_account}"
  audience            = ["api://AzureADTokenExchange"]
}

# Read access to each listed secret only (scope: the secret), not to the whole vault.
resource "azurerm_role_assignment" "app" {
  for_each             = toset(local.secrets)
  scope                = "${data.azurerm_key_vault.app.id}/secrets/${each.value}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

# The ServiceAccount the app's pods run as, naming the identity (kvinject and the Azure provider read it).
resource "kubernetes_manifest" "service_account" {
  manifest = {
    apiVersion = "v1"
    kind       = "ServiceAccount"
    metadata = {
      name      = local.service_account
      namespace = local.namespace
      annotations = {
        "azure.workload.identity/client-id" = azurerm_user_assigned_identity.app.client_id
        "azure.workload.identity/tenant-id" = azurerm_user_assigned_identity.app.tenant_id
      }
    }
  }
}

# kvinject's mirror of the three resources above: which ServiceAccounts are federated to the identity
# (the federated credential's subject) and what it may read (the role assignments).
resource "kubernetes_manifest" "secret_access_policy" {
  manifest = {
    apiVersion = "kvinject.io/v1alpha1"
    kind       = "SecretAccessPolicy"
    metadata = {
      name = "payments-api"
    }
    spec = {
      identity = {
        clientId = azurerm_user_assigned_identity.app.client_id
        tenantId = azurerm_user_assigned_identity.app.tenant_id
      }
      federatedServiceAccounts = [
        {
          namespace = local.namespace
          name      = local.service_account
        }
      ]
      allow = [
        {
          vault   = local.vault_name
          objects = local.secrets
        }
      ]
    }
  }
}

output "client_id" {
  description = "The identity's client id (the ServiceAccount's azure.workload.identity/client-id)."
  value       = azurerm_user_assigned_identity.app.client_id
}
