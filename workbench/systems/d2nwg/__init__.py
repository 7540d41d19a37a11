"""D2NWG: dataset-conditioned weight generation."""
