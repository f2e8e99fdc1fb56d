"""HTTP routes of the service layer (aiohttp); behaviour lives in the services they call."""
