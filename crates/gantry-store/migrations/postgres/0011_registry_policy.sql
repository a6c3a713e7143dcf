-- A project's registry policy as JSON: tag immutability (patterns, and the tags allowed to move
-- anyway) and retention rules (see gantry_api::rest::RegistryPolicy). Same in both flavours.
ALTER TABLE registry_projects ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
