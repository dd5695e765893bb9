"""Reading an image without pulling it: manifests, layer indexes, the merged filesystem."""
