"""The catalog: versioned operation costs, quotes, campaign estimates and credit packages."""
