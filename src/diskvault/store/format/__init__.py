"""The bytes as they lie in a repository: config, packs, manifests, snapshot records, the codec
and the record crypto. Knows no index and no flow."""
