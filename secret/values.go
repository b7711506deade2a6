package secret

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// DecryptValues decrypts each scalar of a secret values file (werf's
// secret-values.yaml) and answers the file in clear: keys, order and
// comments kept, every value a string, as werf gives them to a chart.
func (k Key) DecryptValues(data []byte) ([]byte, error) {
	return k.walkValues(data, func(path, v string) (string, error) {
		plain, err := k.Decrypt(v)
		if err != nil {
			return "", fmt.Errorf("value %s: %w", path, err)
		}
		return string(plain), nil
	})
}

// EncryptValues encrypts each scalar of a values file, as werf does (a
// number or boolean as its text).
func (k Key) EncryptValues(data []byte) ([]byte, error) {
	return k.walkValues(data, func(_, v string) (string, error) { return k.Encrypt([]byte(v)) })
}

// walkValues applies f to every scalar value of a YAML document, by its
// path (a.b[0].c), and writes the document back with string values.
func (k Key) walkValues(data []byte, f func(path, v string) (string, error)) ([]byte, error) {
	if k.block == nil {
		return nil, ErrNoKey
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	if doc.Kind == 0 {
		return []byte{}, nil
	}
	if err := walk(&doc, "", f); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	return out.Bytes(), enc.Close()
}

func walk(n *yaml.Node, path string, f func(path, v string) (string, error)) error {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := walk(c, path, f); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			p := key
			if path != "" {
				p = path + "." + key
			}
			if err := walk(n.Content[i+1], p, f); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if err := walk(c, path+"["+strconv.Itoa(i)+"]", f); err != nil {
				return err
			}
		}
	case yaml.AliasNode:
		return fmt.Errorf("value %s: an alias (*%s): write the value out in secret values", path, n.Value)
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil
		}
		v, err := f(path, n.Value)
		if err != nil {
			return err
		}
		n.Value, n.Tag, n.Anchor = v, "!!str", ""
		n.Style = 0
		if strings.Contains(v, "\n") {
			n.Style = yaml.LiteralStyle
		}
	}
	return nil
}
