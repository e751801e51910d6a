// The API docs: Swagger UI over this server's own OpenAPI document.
// A file of its own (not an inline script) so the page's policy can forbid inline scripts.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
});
