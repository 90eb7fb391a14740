"""Data: tokenizers, the built-in corpora and token storage. Heavy imports (tokenizers) happen on use."""
