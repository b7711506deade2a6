package secret

import (
	"bytes"
	"encoding/base64"
	"os"
	"strings"
	"testing"
)

// werfKey is the key of werf 1.1's integration fixtures (their
// .werf_secret_key, werf/werf@v1.1.36 integration/helm/secret/_fixtures).
const werfKey = "82a0f04a09e034421a8978c60bffac87"

func mustKey(t testing.TB, text string) Key {
	t.Helper()
	k, err := ParseKey(text)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestDecryptsWerfSamples: ciphertexts werf 1.1 made, from its own tests.
func TestDecryptsWerfSamples(t *testing.T) {
	for _, c := range []struct{ source, key, secret, plain string }{
		{"integration/helm/secret/base_test.go", werfKey, "1000ceeb30457f57eb67a2dfecd65c563417f4ae06167fb21be60549d247bf388165", "test\n"},
		{"integration/helm/secret/_fixtures/file/encrypted_secret", werfKey, "10008f2d1c7c1c254b92838919283299b2890fa4eb0f7def5dc582d11e767d547bec\n", "secret\n"},
		{"integration/helm/render/_fixtures/secret/.helm/secret-values.yaml int", werfKey, "10000dea50a7303d50a0ce029d051c32ea9d6ed9865db64522847e702ac032a8d72d", "17"},
		{"integration/helm/render/_fixtures/secret/.helm/secret-values.yaml quoted", werfKey, "1000723772714ae5d5cfc43e53b7225462da4213b854e8f6c4b003e154b6446db83d", "'password'"},
		{"integration/helm/render/_fixtures/secret/.helm/secret-values.yaml json", werfKey, "100034d3cc7861506e2f9aaec81d0177a2cdc723a5d9bb954d46b924bf488e82a05e1667cb898d156e6c487d8b31353931013bb126325415458b5b50c40610e3d6e77f1384bd51d81a77c80fd6e2ae88e698968b1e1d5008499f7bc467309a8e145a", `{"web":{"id":"220821453116","redirect_uris":["https://test.ru"]}}`},
		{"pkg/secret/aes_secret_test.go", "11ac8312520b5ff037bae386ea2e8a07", "10000f13a718d019612ab8ad30d9bec8e2c09df0f2d168c179bef954e78371bf6a5a", "flant"},
		{"an empty secret is empty", werfKey, "", ""},
	} {
		got, err := mustKey(t, c.key).Decrypt(c.secret)
		if err != nil || string(got) != c.plain {
			t.Errorf("%s: %q, %v; want %q", c.source, got, err, c.plain)
		}
	}
	enc, err := os.ReadFile("testdata/tls.key.enc")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/tls.key.b64")
	if err != nil {
		t.Fatal(err)
	}
	got, err := mustKey(t, werfKey).Decrypt(string(enc))
	if err != nil {
		t.Fatal(err)
	}
	if b64 := base64.StdEncoding.EncodeToString(got); b64 != strings.TrimSpace(string(want)) {
		t.Errorf("tls.key: %d bytes whose base64 is not werf's test's", len(got))
	}
}

func TestRoundTripAndKeySizes(t *testing.T) {
	for _, n := range []int{32, 48, 64} {
		k := mustKey(t, strings.Repeat("a1", n/2))
		for _, plain := range []string{"", "x", "0123456789abcdef", strings.Repeat("long secret\n", 100), "\x00\xff binary"} {
			s, err := k.Encrypt([]byte(plain))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(s, "1000") || len(s) < minHex {
				t.Errorf("%q encrypted to %q: not werf's form", plain, s)
			}
			got, err := k.Decrypt(s)
			if err != nil || string(got) != plain {
				t.Errorf("round trip of %q with a %d-hex key: %q, %v", plain, n, got, err)
			}
		}
	}
	gen, err := GenerateKey()
	if err != nil || len(gen) != 32 {
		t.Fatalf("GenerateKey: %q %v", gen, err)
	}
	mustKey(t, gen)
}

// TestErrorsSayWhatIsWrong: wrong key, cut-short secret, bad keys; no
// error quotes the secret or its plaintext.
func TestErrorsSayWhatIsWrong(t *testing.T) {
	good := "1000ceeb30457f57eb67a2dfecd65c563417f4ae06167fb21be60549d247bf388165"
	for _, c := range []struct {
		name, key, secret, want string
	}{
		{"wrong key", "11ac8312520b5ff037bae386ea2e8a07", good, "does not decrypt it"},
		{"unit test's damaged sample", "11ac8312520b5ff037bae386ea2e8a07", "10000f13a718d019612ab8ad30d9bec8e2c09df0f2d168c179bef954e78371bf6a5b", "does not decrypt it"},
		{"cut short", werfKey, good[:60], "at least 68"},
		{"cut mid-block", werfKey, good + "abcd", "not whole blocks"},
		{"odd length", werfKey, good[:67], "at least 68"},
		{"not hex", werfKey, strings.Replace(good, "ce", "xx", 1), "not an encrypted secret"},
		{"a value never encrypted", werfKey, "plain text value that is long enough to pass the length check!!!!!", "not an encrypted secret"},
	} {
		_, err := mustKey(t, c.key).Decrypt(c.secret)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
			continue
		}
		if strings.Contains(err.Error(), c.secret[:20]) || strings.Contains(err.Error(), "test") {
			t.Errorf("%s: the error quotes the secret: %v", c.name, err)
		}
	}
	for _, c := range []struct{ key, want string }{
		{"xyz", "not hex"}, {"1", "not hex"}, {"12", "1 bytes"}, {strings.Repeat("ab", 20), "20 bytes"}, {"  ", "no secret key"},
	} {
		if _, err := ParseKey(c.key); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("key %q: %v, want %q", c.key, err, c.want)
		}
	}
}

// TestValuesOfWerf: werf's values fixture decrypts to its plaintext
// (werf/werf@v1.1.36 integration/helm/secret/_fixtures/values), and
// values round-trip with keys, order and comments kept.
func TestValuesOfWerf(t *testing.T) {
	enc := `a: 100052fc795671551b9bf0aa996e7c00997d0343a8f8e770bb94050e533119c43d39
b:
- 10009bab61e443b9550b1d024788f03f40789bbcfc1135cdfc951bd1445680d590d3
- 100027133a209b83060bb6b1b9e110dc7806f9671445a5a4d133b8c681e08b652af9
- 10008917de2e68d056e8e10c9e62915cc01f80d64a3a48e0902d01ec13b60ce8996f
c:
  d: 1000039faf2e22843f41c10d317c86df760e273daedfab601b0dc03dbae398f249ad
`
	k := mustKey(t, werfKey)
	got, err := k.DecryptValues([]byte(enc))
	if err != nil {
		t.Fatal(err)
	}
	want := "a: \"1\"\nb:\n  - \"1\"\n  - \"2\"\n  - \"3\"\nc:\n  d: \"4\"\n"
	if string(got) != want {
		t.Errorf("decrypted values:\n%s\nwant:\n%s", got, want)
	}
	clear := "# database\ndb:\n  password: s3cr3t # rotate monthly\n  port: 5432\n  tls: true\nlist: [a, b]\nempty:\nmultiline: |\n  line 1\n  line 2\n"
	e, err := k.EncryptValues([]byte(clear))
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range []string{"s3cr3t", "5432", "line 1"} {
		if bytes.Contains(e, []byte(plain)) {
			t.Errorf("encrypted values still hold %q:\n%s", plain, e)
		}
	}
	if !bytes.Contains(e, []byte("# rotate monthly")) || !bytes.Contains(e, []byte("# database")) {
		t.Errorf("comments lost:\n%s", e)
	}
	back, err := k.DecryptValues(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"password: s3cr3t", `port: "5432"`, `tls: "true"`, "list: [a, b]", "multiline: |\n  line 1\n  line 2\n"} {
		if !bytes.Contains(back, []byte(s)) {
			t.Errorf("round trip lost %q:\n%s", s, back)
		}
	}
	_, err = k.DecryptValues([]byte("db:\n  password: notencrypted\n"))
	if err == nil || !strings.Contains(err.Error(), "value db.password") || strings.Contains(err.Error(), "notencrypted") {
		t.Errorf("a clear value in secret values: %v", err)
	}
}

func FuzzDecrypt(f *testing.F) {
	f.Add("1000ceeb30457f57eb67a2dfecd65c563417f4ae06167fb21be60549d247bf388165")
	f.Add("10")
	k := mustKey(f, werfKey)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = k.Decrypt(s) // never panics
		e, err := k.Encrypt([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := k.Decrypt(e); err != nil || string(got) != s {
			t.Fatalf("round trip of %q: %q %v", s, got, err)
		}
	})
}
