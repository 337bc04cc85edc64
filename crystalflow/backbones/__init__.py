"""The equivariant backbones, one file each, and their registry."""
