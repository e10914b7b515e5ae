"""The public website: catalog and model pages, server-rendered."""
