// Renders Modelfile TEMPLATEs with Go's text/template as Ollama's chat endpoint does, for the export tests.
//
// Input (stdin, JSON): [{"template": "...", "system": "...", "chats": [[{"role": "...", "content": "..."}]]}]
// Output (stdout, JSON): one list of rendered prompts per input item, or {"error": "..."} for an item that fails.
//
// What it models of Ollama: the Modelfile's SYSTEM goes first when a chat does not start with a system message;
// consecutive messages of the same role are merged with a blank line; .System joins every system message with a
// blank line; a template that names .Messages runs once over the whole chat with missingkey=zero and a json func.
package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Item struct {
	Template string      `json:"template"`
	System   string      `json:"system"`
	Chats    [][]Message `json:"chats"`
}

func collate(messages []Message) (string, []*Message) {
	var systems []string
	var merged []*Message
	for i := range messages {
		message := messages[i]
		if message.Role == "system" {
			systems = append(systems, message.Content)
		}
		if len(merged) > 0 && merged[len(merged)-1].Role == message.Role {
			merged[len(merged)-1].Content += "\n\n" + message.Content
		} else {
			merged = append(merged, &message)
		}
	}
	return strings.Join(systems, "\n\n"), merged
}

func render(tmpl *template.Template, system string, chat []Message) (string, error) {
	if system != "" && (len(chat) == 0 || chat[0].Role != "system") {
		chat = append([]Message{{Role: "system", Content: system}}, chat...)
	}
	joined, merged := collate(chat)
	var out bytes.Buffer
	err := tmpl.Execute(&out, map[string]any{
		"System": joined, "Messages": merged, "Tools": nil, "Response": "", "Think": false, "IsThinkSet": false,
	})
	return out.String(), err
}

func main() {
	var items []Item
	if err := json.NewDecoder(os.Stdin).Decode(&items); err != nil {
		panic(err)
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	var results []any
	for _, item := range items {
		tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(item.Template)
		if err != nil {
			results = append(results, map[string]string{"error": err.Error()})
			continue
		}
		var rendered []string
		for _, chat := range item.Chats {
			text, err := render(tmpl, item.System, chat)
			if err != nil {
				rendered = nil
				results = append(results, map[string]string{"error": err.Error()})
				break
			}
			rendered = append(rendered, text)
		}
		if rendered != nil {
			results = append(results, rendered)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		panic(err)
	}
}
