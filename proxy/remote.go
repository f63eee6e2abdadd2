package proxy

import (
	"bytes"
)

// Input the body does not size.
//
// The hold bounds a call's input by the body's bytes (inputEstimate). That
// bound fails when the provider reads input the body does not carry — a
// stored response or conversation, a file or image by id or URL, what a
// provider-side tool fetches, searches or runs — or carries in a form whose
// tokens do not follow its bytes: an image is billed by its dimensions (a
// few hundred bytes of PNG can be a 2048-pixel square), a PDF by its pages
// rendered as images. Such a call holds the model's whole context window,
// and is refused where the model has none to bound it (holdRequest).
//
// Detection is structural (scan.go): keys as every parser reads them, after
// unescaping, and the "type" of each part — never the raw bytes, so a
// user's text that mentions "image_url" is text, and a key spelled
// "image\u005furl" is still image_url. It is a constant amount of work per
// member, inside the one scan of the body.

// Why a call's input is of unknown size, for the refusal message.
const (
	reasonImage    = "an image (billed by its dimensions, not its bytes)"
	reasonFile     = "a file (by id or URL, or a PDF billed by its pages)"
	reasonDocument = "a document (by URL or file, or a PDF billed by its pages)"
	reasonStored   = "a stored item the provider looks up"
	reasonCached   = "cached content the provider looks up"
	reasonTool     = "a provider-side tool (search, fetch, code execution, file search, MCP)"
)

// name is a member name the gateway reads; nameOther for all others.
type name uint8

const (
	nameOther name = iota
	// Parts, at any depth.
	nameType
	nameSource
	nameImageURL
	nameURL
	nameFileRef // file_id, file_url, file_data
	nameCachedContent
	nameRole
	nameID
	nameEncryptedContent
	// The root's members.
	nameModel
	nameStream
	nameStreamOptions
	nameIncludeUsage
	nameMaxTokens
	nameMaxCompletionTokens
	nameMaxOutputTokens
	nameN
	nameBestOf
	namePrompt
	nameInput
	nameTools
	namePreviousResponseID
	nameConversation
	nameWebSearchOptions
	nameMCPServers
	nameContainer
	nameBackground
	nameServiceTier

	nameCount
)

func nameOf(k []byte) name {
	switch string(k) {
	case "type":
		return nameType
	case "source":
		return nameSource
	case "image_url":
		return nameImageURL
	case "url":
		return nameURL
	case "file_id", "file_url", "file_data":
		return nameFileRef
	case "cached_content": // Gemini's OpenAI endpoint: a server-side context cache
		return nameCachedContent
	case "role":
		return nameRole
	case "id":
		return nameID
	case "encrypted_content":
		return nameEncryptedContent
	case "model":
		return nameModel
	case "stream":
		return nameStream
	case "stream_options":
		return nameStreamOptions
	case "include_usage":
		return nameIncludeUsage
	case "max_tokens":
		return nameMaxTokens
	case "max_completion_tokens":
		return nameMaxCompletionTokens
	case "max_output_tokens":
		return nameMaxOutputTokens
	case "n":
		return nameN
	case "best_of":
		return nameBestOf
	case "prompt":
		return namePrompt
	case "input":
		return nameInput
	case "tools":
		return nameTools
	case "previous_response_id":
		return namePreviousResponseID
	case "conversation":
		return nameConversation
	case "web_search_options":
		return nameWebSearchOptions
	case "mcp_servers":
		return nameMCPServers
	case "container":
		return nameContainer
	case "background":
		return nameBackground
	case "service_tier":
		return nameServiceTier
	}
	return nameOther
}

// partType is what an object's "type" says of it.
type partType uint8

const (
	typeNone            partType = iota // no "type" string
	typeOther                           // a type not listed here
	typeImage                           // billed by its dimensions
	typeDocument                        // a PDF or a document by reference, unless its source is text
	typeFile                            // a file, inline (a PDF) or by reference
	typeItemReference                   // a Responses item the provider looks up
	typeReasoning                       // a Responses reasoning item
	typeInline                          // "text", "content": a document source carried in the body
	typeClientTool                      // a tool the client runs: "function", "custom" (or "")
	typeAnthropicClient                 // Anthropic-defined tools the client runs: bash_*, text_editor_*, memory_*
	typeFeeTool                         // a provider-side tool billed per use at a fee the catalog does not price
)

var anthropicClientTools = [...][]byte{[]byte("bash_"), []byte("text_editor_"), []byte("memory_")}

// codeExecution prefixes Anthropic's code execution tool types, billed per
// container hour beside tokens.
var codeExecution = []byte("code_execution_")

// errFeeTool refuses a tool the provider bills per use beside tokens at a fee
// the catalog does not price (OpenAI: code_interpreter containers,
// file_search calls, image_generation images; Anthropic: code execution
// container hours). Passed through, those fees would be free to the caller.
// Web search, whose fee the catalog prices, and tools billed in tokens alone
// (MCP, web fetch, computer use) pass.
var errFeeTool = invalid("tools", "This gateway does not offer provider-side tools billed per use beside tokens "+
	"(code_interpreter, file_search, image_generation, code_execution): their fees are not priced. Web search and tools billed in tokens are offered.")

func partTypeOf(t []byte) partType {
	switch string(t) {
	case "image", "image_url", "input_image", "computer_screenshot", "image_generation_call":
		return typeImage
	case "document":
		return typeDocument
	case "file", "input_file", "container_upload":
		return typeFile
	case "item_reference":
		return typeItemReference
	case "reasoning":
		return typeReasoning
	case "text", "content":
		return typeInline
	case "function", "custom", "":
		return typeClientTool
	case "code_interpreter", "file_search", "image_generation":
		return typeFeeTool
	}
	if bytes.HasPrefix(t, codeExecution) {
		return typeFeeTool
	}
	for _, p := range anthropicClientTools {
		if bytes.HasPrefix(t, p) {
			return typeAnthropicClient
		}
	}
	return typeOther
}

// part is what an object's members say about remote input.
type part struct {
	typ       partType
	url       bool   // a "url" member
	inline    bool   // its "source" is carried in the body (type text or content)
	role, id  bool   // "role", "id" members
	encrypted bool   // a non-null "encrypted_content"
	remote    string // a member that is remote input by itself
}

// note records one member of the object: its name, its value's kind, a
// "type" string's text, and the member's own object when it is one.
func (p *part) note(n name, k kind, typ []byte, child *frame) {
	switch n {
	case nameType:
		if k == kindString {
			p.typ = partTypeOf(typ)
		}
	case nameSource:
		p.inline = child != nil && child.object && child.typ == typeInline
	case nameImageURL:
		// OpenAI chat {"url": …} (data: or http), Responses a string. A JSON
		// schema property named image_url ({"type":"string"}) is neither.
		if k == kindString || (child != nil && child.object && child.url) {
			p.setRemote(reasonImage)
		}
	case nameURL:
		p.url = true
	case nameFileRef:
		if k == kindString {
			p.setRemote(reasonFile)
		}
	case nameCachedContent:
		if k == kindString {
			p.setRemote(reasonCached)
		}
	case nameRole:
		p.role = true
	case nameID:
		p.id = true
	case nameEncryptedContent:
		p.encrypted = k != kindNull
	}
}

func (p *part) setRemote(reason string) {
	if p.remote == "" {
		p.remote = reason
	}
}

// reason is why the object is input of unknown size ("" when it is not).
func (p *part) reason() string {
	if p.remote != "" {
		return p.remote
	}
	switch p.typ {
	case typeImage:
		return reasonImage
	case typeDocument:
		if !p.inline {
			return reasonDocument
		}
	case typeFile:
		return reasonFile
	case typeItemReference:
		return reasonStored
	}
	return ""
}

// storedItem: a Responses input item the provider looks up by id — an item
// reference (its type may be left out), or a reasoning item passed back
// without its encrypted content.
func (p *part) storedItem() bool {
	return (p.typ == typeNone && !p.role && p.id) || (p.typ == typeReasoning && !p.encrypted)
}

// providerTool: whether a tool definition is run by the provider, as OpenAI
// and as Anthropic count client tools. OpenAI's client tools are function
// and custom; Anthropic's are custom (no type, or "custom") and its bash,
// text editor and memory tools. Every other type — web search, web fetch,
// file search, code execution, MCP, computer use, image generation, tool
// search, and types yet to come — is held as provider-side.
func (p *part) providerTool() (openAI, anthropic bool) {
	switch p.typ {
	case typeNone, typeClientTool:
		return false, false
	case typeAnthropicClient:
		return true, false
	}
	return true, true
}
