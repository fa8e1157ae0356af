//! `temporal.api.operatorservice.v1.OperatorService`: custom search attributes and namespace
//! deletion. Other RPCs answer Unimplemented (tonic's default) and are listed in README.

use keel_proto::temporal_services::operatorservice::operator_service_server::OperatorService;
use temporalio_protos::temporal::api::enums::v1::IndexedValueType;
use temporalio_protos::temporal::api::operatorservice::v1 as op;
use tonic::{Request, Response, Status};

use super::errors::invalid;
use super::views::system_search_attributes;
use super::Frontend;
use crate::namespaces::SearchAttributeTypes;

/// Most custom search attributes per namespace (Temporal's default for SQL visibility is far
/// lower per type; this bounds the registry record).
const MAX_CUSTOM_SEARCH_ATTRIBUTES: usize = 100;

fn validate(
    attributes: &std::collections::HashMap<String, i32>,
) -> Result<SearchAttributeTypes, Status> {
    if attributes.is_empty() {
        return Err(invalid("SearchAttributes are not set on request."));
    }
    let system = system_search_attributes();
    let mut out = SearchAttributeTypes::new();
    for (name, kind) in attributes {
        if name.is_empty() || name.len() > 255 {
            return Err(invalid("Search attribute name is empty or too long."));
        }
        if system.contains_key(name) {
            return Err(invalid(format!(
                "Search attribute {name} is reserved by system."
            )));
        }
        match IndexedValueType::try_from(*kind) {
            Ok(IndexedValueType::Unspecified) | Err(_) => {
                return Err(invalid(format!(
                    "Unknown search attribute type {kind} for {name}."
                )))
            }
            Ok(_) => {}
        }
        out.insert(name.clone(), *kind);
    }
    Ok(out)
}

#[tonic::async_trait]
impl OperatorService for Frontend {
    async fn add_search_attributes(
        &self,
        request: Request<op::AddSearchAttributesRequest>,
    ) -> Result<Response<op::AddSearchAttributesResponse>, Status> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let change = validate(&r.search_attributes)?;
        let existing = self.namespaces.search_attributes(&namespace.id)?;
        if existing.len() + change.len() > MAX_CUSTOM_SEARCH_ATTRIBUTES {
            return Err(invalid(format!(
                "A namespace has at most {MAX_CUSTOM_SEARCH_ATTRIBUTES} custom search attributes."
            )));
        }
        self.namespaces
            .change_search_attributes(&namespace.name, change, true)
            .await?;
        Ok(Response::new(op::AddSearchAttributesResponse {}))
    }

    async fn remove_search_attributes(
        &self,
        request: Request<op::RemoveSearchAttributesRequest>,
    ) -> Result<Response<op::RemoveSearchAttributesResponse>, Status> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        if r.search_attributes.is_empty() {
            return Err(invalid("SearchAttributes are not set on request."));
        }
        let change = r
            .search_attributes
            .into_iter()
            .map(|name| (name, 0))
            .collect();
        self.namespaces
            .change_search_attributes(&namespace.name, change, false)
            .await?;
        Ok(Response::new(op::RemoveSearchAttributesResponse {}))
    }

    async fn list_search_attributes(
        &self,
        request: Request<op::ListSearchAttributesRequest>,
    ) -> Result<Response<op::ListSearchAttributesResponse>, Status> {
        let r = request.into_inner();
        let namespace = self.namespace(&r.namespace).await?;
        let custom = self.namespaces.search_attributes(&namespace.id)?;
        Ok(Response::new(op::ListSearchAttributesResponse {
            custom_attributes: custom.into_iter().collect(),
            system_attributes: system_search_attributes(),
            storage_schema: Default::default(),
        }))
    }

    async fn delete_namespace(
        &self,
        request: Request<op::DeleteNamespaceRequest>,
    ) -> Result<Response<op::DeleteNamespaceResponse>, Status> {
        let r = request.into_inner();
        let namespace = if r.namespace.is_empty() && !r.namespace_id.is_empty() {
            self.namespaces
                .by_id(&r.namespace_id)
                .ok_or_else(|| super::namespace_not_found(&r.namespace_id))?
        } else {
            self.namespace(&r.namespace).await?
        };
        if namespace.name == "default" {
            return Err(invalid("Namespace default cannot be deleted."));
        }
        let deleted = self.namespaces.delete(&namespace.name).await?;
        Ok(Response::new(op::DeleteNamespaceResponse {
            deleted_namespace: deleted,
        }))
    }
}
