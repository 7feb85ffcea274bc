"""The API's routes by resource: filters (and applying them) and jobs. create_app mounts them under /api."""
