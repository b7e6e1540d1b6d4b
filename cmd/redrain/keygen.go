package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

var keygenCommand = &command{name: "keygen",
	summary:  "print a fresh secret key for admin_keys, app_keys or token_keys",
	synopsis: "redrain keygen [--id ID] [--bytes N]",
	details: `Prints a fresh secret key "ID:HEX" (N random bytes, 32 by default) for the
campaign config file: "admin_keys" (ids of letters, digits and ._-) sign
admin requests; "app_keys" (ids APP or APP.LABEL, APP the app id, such as
--id 7 or --id 7.2027) sign an app's client requests (redrain sign, bench
--app-key); "token_keys" (ids 0-65535) seal and open tokens. A node on
real backends (--kafka, --pd, --redis or cluster members) refuses to start
with no admin key, no app key, the public development admin key or a
public token key.`,
	examples: `# an admin key, for admin_keys and $REDRAIN_ADMIN_KEY
redrain keygen --id ops
# app 7's key for 2027, beside its current one
redrain keygen --id 7.2027
# token key 2, 64 random bytes
redrain keygen --id 2 --bytes 64`}

func (c *cli) keygen(args []string) error {
	fs := keygenCommand.flagSet()
	id := fs.String("id", "1", "the key's id")
	n := fs.Int("bytes", 32, "random bytes in the secret (at least 32)")
	if err := keygenCommand.parse(c, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return keygenCommand.usageError(c, "unexpected arguments %q", fs.Args())
	}
	if *n < 32 {
		return keygenCommand.usageError(c, "--bytes %d: at least 32", *n)
	}
	if *id == "" {
		return keygenCommand.usageError(c, "--id: empty")
	}
	secret := make([]byte, *n)
	_, _ = rand.Read(secret) // crypto/rand.Read never fails
	_, err := fmt.Fprintf(c.stdout, "%s:%s\n", *id, hex.EncodeToString(secret))
	return err
}
