# gsv-pipelines: the Vault / OpenBao policy of the gsv_pipelines code location's own token.
#
# Least privilege: only the paths the pipelines call, with only the capabilities they use.
# Install it with `bao policy write gsv-pipelines deploy/vault/gsv-pipelines.hcl` (or
# `vault policy write ...`); deploy/vault/README.md binds it to an AppRole or Kubernetes role.
# tests/deploy/test_vault_policy.py proves, against a real OpenBao, what it allows and refuses.
#
# Wildcards: `*` is a glob allowed only at the END of a path (it matches any rest, slashes
# included); `+` stands for exactly one path segment anywhere. A `*` in the middle is taken
# literally, so `transit/keys/*/rotate` would match nothing. When several rules match a
# request, the most specific one applies (not the union).

# --- KV v2: the platform secrets that the rotation group owns -------------------------------
# Rotation reads the current version, then writes the new value with check-and-set (a write
# is `create` for a new secret, `update` for a new version). A rollback writes the previous
# data again as a newer version, so nothing here needs delete, undelete or destroy: the
# history of every rotated secret stays in Vault. Only the `gsv/` tree, never the whole mount.
path "secret/data/gsv/*" {
  capabilities = ["read", "create", "update"]
}

# The inventory reads each secret's metadata (created time, current version, the versions
# kept) and lists the tree. Read only: writing metadata could lower max_versions and so purge
# old versions, and deleting it would destroy the secret with all its history.
path "secret/metadata/gsv/*" {
  capabilities = ["read", "list"]
}

# --- Database secrets engine: static roles ---------------------------------------------------
# `vault_database_static_role` secrets: Vault owns the password of a static role; rotation
# asks Vault to rotate it now ...
path "database/rotate-role/*" {
  capabilities = ["update"]
}

# ... then reads the new credential once, to prove it logs in (the verification probe) ...
path "database/static-creds/*" {
  capabilities = ["read"]
}

# ... and reads the role's settings (rotation period, last rotation) to judge its age.
# No `database/creds/*` (dynamic credentials), no `database/config/*` (connection details
# and the engine's root credentials), no writing roles.
path "database/static-roles/*" {
  capabilities = ["read"]
}

# --- Transit: encryption keys -----------------------------------------------------------------
# Rotation adds a new key version ...
path "transit/keys/+/rotate" {
  capabilities = ["update"]
}

# ... and, once the grace period is over, raises min_decryption_version (and, if asked,
# min_encryption_version) to retire old ones. Only those two settings: the same endpoint
# could otherwise make a key exportable (irreversible) or deletable.
path "transit/keys/+/config" {
  capabilities = ["update"]
  allowed_parameters = {
    "min_decryption_version" = []
    "min_encryption_version" = []
  }
}

# The key's versions and settings, to judge its age and what is left to retire. Read only:
# creating, deleting, trimming, exporting or backing up keys stays with the operators.
path "transit/keys/*" {
  capabilities = ["read"]
}

# The verification probe: encrypt a throwaway value with the new version and decrypt it.
path "transit/encrypt/*" {
  capabilities = ["update"]
}

path "transit/decrypt/*" {
  capabilities = ["update"]
}

# --- Backups: raft snapshots ------------------------------------------------------------------
# The backups group streams a snapshot of Vault's raft storage (GET). Only `read`: restoring
# a snapshot is a POST (`update`) on this same path, and is left to a human.
path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}

# Just before each snapshot the backup writes a fresh nonce to the DR sentinel; a drill reads
# it back from the restored copy to prove the snapshot holds the data. That one path only, and
# no read: the drill reads it from the scratch copy, not from here.
path "secret/data/gsv-dr/sentinel" {
  capabilities = ["create", "update"]
}

# --- Its own token ----------------------------------------------------------------------------
# Checking the token at start-up, and keeping a long run's token alive. Listed here so that
# the policy works on its own, with or without Vault's `default` policy attached.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
