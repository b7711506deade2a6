package deploy

import "strings"

// werfFunctions are werf 1.1's chart functions. werf's Helm fork had them
// as template functions; Helm 3 takes no functions of ours, so a chart's
// calls of them become calls of the named templates of the same names
// (werfHelpers, secretFileTemplate), which answer the same text. A bare
// name in an action can only be a function call, which Helm alone would
// refuse: rewriting it changes no chart that renders without werf.
var werfFunctions = []string{"werf_container_image", "werf_container_env", "werf_secret_file", "image", "image_id"}

// rewriteWerfCalls turns the calls of werf's functions in the actions
// ({{ … }}) of a template into includes of the same-named templates:
// `tuple "app" . | werf_container_image` becomes `tuple "app" . | include
// "werf_container_image"`, and `werf_container_image .` becomes `include
// "werf_container_image" .`. Text outside actions, strings, raw strings,
// comments, fields (.werf_container_image) and longer names are left as
// they are.
func rewriteWerfCalls(tpl string) string {
	if !strings.Contains(tpl, "image") && !strings.Contains(tpl, "werf_") {
		return tpl
	}
	var out strings.Builder
	rest := tpl
	for {
		open := strings.Index(rest, "{{")
		if open < 0 {
			out.WriteString(rest)
			return out.String()
		}
		out.WriteString(rest[:open+2])
		rest = rest[open+2:]
		end := actionEnd(rest)
		if end < 0 {
			// An unclosed action: the template parser says so.
			out.WriteString(rest)
			return out.String()
		}
		out.WriteString(rewriteAction(rest[:end]))
		rest = rest[end:]
	}
}

// actionEnd is the index of the "}}" that closes the action body starts
// (after its "{{"), skipping strings, raw strings, characters and
// comments; -1 when there is none.
func actionEnd(body string) int {
	for i := 0; i < len(body); i++ {
		if end, ok := literalEnd(body, i); ok {
			if end < 0 {
				return -1
			}
			i = end - 1
			continue
		}
		if strings.HasPrefix(body[i:], "}}") {
			return i
		}
	}
	return -1
}

// literalEnd tells whether a string, raw string, character or comment
// starts at body[i], and the index just past it (-1 when it is not
// closed).
func literalEnd(body string, i int) (end int, ok bool) {
	switch c := body[i]; {
	case c == '"' || c == '\'':
		if j := quotedEnd(body, i); j >= 0 {
			return j + 1, true
		}
		return -1, true
	case c == '`':
		if j := strings.IndexByte(body[i+1:], '`'); j >= 0 {
			return i + j + 2, true
		}
		return -1, true
	case strings.HasPrefix(body[i:], "/*"):
		if j := strings.Index(body[i+2:], "*/"); j >= 0 {
			return i + j + 4, true
		}
		return -1, true
	}
	return 0, false
}

// quotedEnd is the index of the quote closing the string or character
// starting at body[i]; -1 when unclosed.
func quotedEnd(body string, i int) int {
	q := body[i]
	for j := i + 1; j < len(body); j++ {
		switch body[j] {
		case '\\':
			j++
		case q:
			return j
		case '\n':
			if q == '"' {
				return -1
			}
		}
	}
	return -1
}

// rewriteAction rewrites the bare identifiers of werf's functions in one
// action's body.
func rewriteAction(body string) string {
	var out strings.Builder
	for i := 0; i < len(body); {
		if end, ok := literalEnd(body, i); ok {
			if end < 0 {
				end = len(body)
			}
			out.WriteString(body[i:end])
			i = end
			continue
		}
		if !isIdentByte(body[i]) {
			out.WriteByte(body[i])
			i++
			continue
		}
		j := i
		for j < len(body) && isIdentByte(body[j]) {
			j++
		}
		word := body[i:j]
		prev := byte(' ')
		if i > 0 {
			prev = body[i-1]
		}
		if prev != '.' && prev != '$' && isWerfFunction(word) {
			out.WriteString(`include "` + word + `"`)
		} else {
			out.WriteString(word)
		}
		i = j
	}
	return out.String()
}

func isWerfFunction(word string) bool {
	for _, f := range werfFunctions {
		if word == f {
			return true
		}
	}
	return false
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}
