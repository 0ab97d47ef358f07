package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

func TestAccessLogFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		env     string
		want    string
		wantErr string
	}{
		{want: "off"},
		{args: []string{"-access-log"}, want: "json"},
		{args: []string{"-access-log=text"}, want: "text"},
		{args: []string{"-access-log=JSON"}, want: "json"},
		{args: []string{"-access-log=false"}, want: "off"},
		{env: "text", want: "text"},
		{args: []string{"-access-log=off"}, env: "json", want: "off"}, // the flag wins
		{args: []string{"-access-log=xml"}, wantErr: `access log format "xml"`},
		{env: "yaml", wantErr: `WEFT_ACCESS_LOG="yaml"`},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(&bytes.Buffer{})
		access := accessLogFlag("off")
		fs.Var(&access, "access-log", "")
		fs.String("log-level", "info", "")
		err := fs.Parse(tc.args)
		if err == nil {
			err = fromEnv(fs, func(k string) string {
				if k == "WEFT_ACCESS_LOG" {
					return tc.env
				}
				return ""
			})
		}
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v env %q: error %v, want %q", tc.args, tc.env, err, tc.wantErr)
			}
			continue
		}
		if err != nil || string(access) != tc.want {
			t.Errorf("%v env %q: %q, %v; want %q", tc.args, tc.env, access, err, tc.want)
		}
	}
}

func TestAccessLogFormats(t *testing.T) {
	if accessLogFlag("off").logger(&bytes.Buffer{}) != nil {
		t.Error("off gives a logger")
	}
	for format, want := range map[accessLogFlag]string{"json": `"msg":"Request"`, "text": "msg=Request"} {
		var b bytes.Buffer
		format.logger(&b).Info("Request", "method", "GET")
		if !strings.Contains(b.String(), want) {
			t.Errorf("%s: %q lacks %q", format, b.String(), want)
		}
	}
}

func TestOverridesGOGC(t *testing.T) {
	for _, tc := range []struct {
		args []string
		gogc string
		want bool
	}{
		{want: true}, // the proxy's default
		{gogc: "200", want: false},
		{args: []string{"-gc-percent=80"}, gogc: "200", want: true},
		{args: []string{"-gc-percent=80"}, want: true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.Int("gc-percent", defaultGCPercent, "")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := overridesGOGC(fs, func(string) string { return tc.gogc }); got != tc.want {
			t.Errorf("%v GOGC=%q: %v, want %v", tc.args, tc.gogc, got, tc.want)
		}
	}
}
