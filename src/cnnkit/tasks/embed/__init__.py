"""Embeddings: a CNN maps each image to a unit vector, trained with a margin loss on identity
folders so that one person's photos lie close together (face recognition's open set)."""
