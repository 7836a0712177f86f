terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80" # stage conditions (before_entry) on V2 pipelines
    }
  }
}
