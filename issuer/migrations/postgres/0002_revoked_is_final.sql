-- A revoked license stays revoked, whoever writes: the service changes a status only from the one it read under the
-- license's row lock (compare and set), and this trigger refuses any change away from 'revoked' at the database, so
-- neither a race nor a foreign writer can undo a revocation. SQLSTATE 23514 (check_violation) with this message is
-- matched by the store (StoreError::RevokedIsFinal). The same as migrations/sqlite/0003.
CREATE FUNCTION licenses_revoked_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'revoked' AND NEW.status <> 'revoked' THEN
        RAISE EXCEPTION 'revoked_is_final' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER licenses_revoked_is_final
BEFORE UPDATE OF status ON licenses
FOR EACH ROW EXECUTE FUNCTION licenses_revoked_is_final();
