"""Synthetic multi-modal NER data in which only the image can decide an entity's type (see `generator`)."""
