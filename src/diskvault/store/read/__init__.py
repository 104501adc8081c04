"""Reading a snapshot's image: chunks verified through the index, manifests placed at offsets,
planned and random-access reads, browsing, diffs."""
