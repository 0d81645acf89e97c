-- A revoked license stays revoked, whoever writes: the service changes a status only from the one it read under the
-- unit of work's lock (compare and set), and this trigger refuses any change away from 'revoked' at the database,
-- so neither a race nor a foreign writer can undo a revocation. The message is matched by the store
-- (StoreError::RevokedIsFinal).
CREATE TRIGGER licenses_revoked_is_final
BEFORE UPDATE OF status ON licenses
WHEN OLD.status = 'revoked' AND NEW.status <> 'revoked'
BEGIN
    SELECT RAISE(ABORT, 'revoked_is_final');
END;
