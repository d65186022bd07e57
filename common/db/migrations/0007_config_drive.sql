-- Config drive (Nova's "config_drive"): the compute attaches an ISO 9660 volume labelled config-2 with the
-- instance's metadata, for networks without a metadata service.
ALTER TABLE instances ADD COLUMN config_drive boolean NOT NULL DEFAULT false;
