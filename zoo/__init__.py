"""Architecture JSONs shipped with prunet (see zoo/index.json)."""
