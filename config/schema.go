package config

import "regexp"

// schemaProbe names every section with an empty value, so that walking
// it visits every mapping the parser knows (the errors are ignored).
const schemaProbe = `
cluster: {nodes: [{}], witnesses: [{}], timing: {}}
vips: [{}]
services: [{vips: [{}]}]
announce: {}
control: {}
apps: {}
processes: [{rlimits: {}, backoff: {}, health: {sip_options: {}}}]
hooks: {}
metrics: {}
runtime: {}
log: {}
`

var indexRE = regexp.MustCompile(`\[[0-9]+\]`)

// Keys returns the keys the parser accepts, by the dotted path of the
// mapping that holds them ("" for the top level, "processes[]" for a list
// item), read from the parser itself so that documentation tests cannot
// drift from it.
func Keys() map[string][]string {
	p := &parser{file: "schema", keys: map[string][]string{}}
	if root := p.decode([]byte(schemaProbe)); root != nil {
		p.config(root, defaults())
	}
	out := map[string][]string{}
	for path, keys := range p.keys {
		out[indexRE.ReplaceAllString(path, "[]")] = keys
	}
	return out
}
