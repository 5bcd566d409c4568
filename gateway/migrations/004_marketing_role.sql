-- The `marketing` role (issue 15): the membership team runs campaigns through the gateway.
ALTER TABLE gateway.api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE gateway.api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('wallet-backend', 'settlement', 'officer', 'admin', 'marketing'));
