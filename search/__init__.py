"""Search your own videos: index folders of videos with a retrieval model, query them in words (see README.md)."""
