"""Crystal structures and molecules: CIF reading, whole molecules, clusters, contacts."""
