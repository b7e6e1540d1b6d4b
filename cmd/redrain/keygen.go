package main

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
)

const keygenUsage = `usage: redrain keygen [--id ID] [--bytes N]

Prints a fresh secret key "ID:HEX" (N random bytes, 32 by default) for the
campaign config file: "admin_keys" (ids of letters, digits and ._-) sign
admin requests; "app_keys" (ids APP or APP.LABEL, APP the app id, such as
--id 7 or --id 7.2027) sign an app's client requests (redrain sign, bench
--app-key); "token_keys" (ids 0-65535) seal and open tokens. A node on
real backends (--kafka, --pd, --redis or cluster members) refuses to start
with no admin key, no app key, the public development admin key or a
public token key.

Flags:
`

func keygenCmd(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), keygenUsage)
		fs.PrintDefaults()
	}
	id := fs.String("id", "1", "the key's id")
	n := fs.Int("bytes", 32, "random bytes in the secret (at least 32)")
	_ = fs.Parse(args)
	if *n < 32 {
		return fmt.Errorf("--bytes %d: at least 32", *n)
	}
	if *id == "" {
		return fmt.Errorf("--id: empty")
	}
	secret := make([]byte, *n)
	_, _ = rand.Read(secret) // crypto/rand.Read never fails
	_, err := fmt.Fprintf(os.Stdout, "%s:%s\n", *id, hex.EncodeToString(secret))
	return err
}
