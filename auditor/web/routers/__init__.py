"""The dashboard's routes by area: `pages` (server-rendered HTML), `api` (JSON), `auth`
(Sign-In with Ethereum), `live` (the status the pages poll for live updates)."""
