package app

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/limpet-lb/limpet/l7"
	"github.com/limpet-lb/limpet/l7/cookie"
	"github.com/limpet-lb/limpet/userspace/config"
)

// cookieDecode is 'limpet cookie decode --key-file FILE VALUE'.
func (env *Env) cookieDecode(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if err := wantArgs(c, 1, "cookie decode takes one VALUE"); err != nil {
		return err
	}
	files := c.StringSlice("key-file")
	if len(files) == 0 {
		return usagef("cookie decode needs --key-file FILE")
	}
	keys := make([][]byte, 0, len(files))
	for _, f := range files {
		k, err := config.LoadKeyFile(f)
		if err != nil {
			return usagef("--key-file: %v", err)
		}
		keys = append(keys, k)
	}
	info, err := l7.DecodeCookie(c.Args().First(), keys, time.Now())
	if err != nil {
		return fmt.Errorf("cookie does not open: %w", err)
	}
	if format == "json" {
		return writeJSON(env.Stdout, info)
	}
	tw := newTable(env.Stdout)
	fmt.Fprintf(tw, "member\t%s\n", info.Member)
	fmt.Fprintf(tw, "virtual_server\t%s\n", info.VirtualServer)
	fmt.Fprintf(tw, "issued\t%s\n", info.Issued.Format(time.RFC3339))
	fmt.Fprintf(tw, "age\t%s\n", time.Duration(info.AgeSeconds)*time.Second)
	fmt.Fprintf(tw, "key\t%d (of %d; 0 seals new cookies)\n", info.KeyIndex, len(keys))
	return tw.Flush()
}

// cookieKeygen is 'limpet cookie keygen'.
func (env *Env) cookieKeygen(*cli.Context) error {
	k := make([]byte, cookie.KeySize)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, base64.StdEncoding.EncodeToString(k))
	return nil
}
