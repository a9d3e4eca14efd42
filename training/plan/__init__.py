"""`voxray plan`: derive a training recipe from a dataset's fingerprint (nnU-Net-style self-configuration).

fingerprint (headers or a store's fingerprint.json) → decide (spacing, resampling, normalisation, task) →
search (network, patch, batch on measured step costs from memory) → recipe (a validated job YAML with reasons).
Importing this package is cheap; torch loads when a plan measures its network.
"""
