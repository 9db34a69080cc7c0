"""The versioned model store: entries, tags and archives."""
